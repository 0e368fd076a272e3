"""What a study reports: figures and house style, plots, tables, claims (every threshold), the paper's tables and result files."""
