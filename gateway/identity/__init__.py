"""Who is calling: bearer tokens (workload identity, or development static tokens) become a Principal."""
