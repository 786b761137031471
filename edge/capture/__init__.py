"""Capture: frame sources (camera, video, image folder, the simulated panoramic scene) and image files."""
