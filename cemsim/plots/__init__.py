"""Charts that read sweep result files only (results.parquet), never the simulator. Agg backend, PNG + SVG."""
