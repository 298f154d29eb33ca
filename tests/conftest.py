"""Root of the test tree: pytest puts this folder on ``sys.path``, so shared helpers such as
``app_launch`` import by name from every test package."""
