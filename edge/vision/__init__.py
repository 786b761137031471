"""Vision: face detection, face crops, the mask classifier on LiteRT, model files, and tracking across frames."""
