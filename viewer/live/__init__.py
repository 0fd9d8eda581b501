"""Live video: Kafka records to ordered frames, fanned out to MJPEG clients live or resumed."""
