DROP TABLE mx_slowdowns;
