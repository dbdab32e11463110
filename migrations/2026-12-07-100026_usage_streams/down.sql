DROP TABLE usage_stream_daily;
