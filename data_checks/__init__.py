"""Data checks: Great Expectations suites that gate delivery. They know data, not systems."""
