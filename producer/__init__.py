"""Producer stage: decode a video source with OpenCV and publish encoded frames to Kafka."""
