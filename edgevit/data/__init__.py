"""Frames and images: user videos through opencv, and real sample data that installed packages ship."""
