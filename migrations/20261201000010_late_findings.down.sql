DROP TABLE late_findings;
