"""tunegate: a fine-tuning pipeline that ships an adapter only when it beats the prompt."""
