"""The bench file and its overrides: experiments, variants, placeholders."""
