"""Browser tests: the alert card in headless Chromium against a real Home Assistant."""
