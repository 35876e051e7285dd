"""The one error type of the configuration: every problem found, one operator-ready line each."""


class ConfigError(ValueError):
    """The configuration cannot be used; ``problems`` holds one operator-ready line per mistake."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))
