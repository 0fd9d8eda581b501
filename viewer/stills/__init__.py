"""Still-image jobs: uploads split into tiles, sent through the processors, collected back."""
