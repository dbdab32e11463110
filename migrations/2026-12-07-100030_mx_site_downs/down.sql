DROP TABLE mx_site_downs;
