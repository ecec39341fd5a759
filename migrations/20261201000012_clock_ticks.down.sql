DROP TABLE clock_ticks;
