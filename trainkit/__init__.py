"""A hands-on course in training AI models, from raw data to a deployed, monitored service, and the library its notebooks write.

Modules:

- `trainkit.clean`: Clean real messy records with a report of every change, decide about missing values column by column, and check the result against a schema.
- `trainkit.data`: Collect the same records from a SQLite database, a CSV file, a JSON web API and an HTML page, and check that the four agree."""

__version__ = "0.1.0"
