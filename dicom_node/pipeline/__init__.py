"""From filed series to delivered results: routing, completion, inference workers, sending."""
