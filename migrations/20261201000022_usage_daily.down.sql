DROP TABLE usage_daily_through;
DROP TABLE usage_daily;
