"""SQLAlchemy Core tables and the repository functions that query them."""
