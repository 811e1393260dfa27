"""Code only the tests use: harnesses and second implementations to compare against."""
