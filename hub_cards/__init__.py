"""Model-card templates, Hub-ready export and push."""
