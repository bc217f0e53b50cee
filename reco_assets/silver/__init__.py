from reco_assets.silver.assets import (
    silver_assets,
    silver_checks,
    silver_links,
    silver_movies,
    silver_ratings,
    silver_tags,
)

__all__ = ["silver_assets", "silver_checks", "silver_links", "silver_movies", "silver_ratings", "silver_tags"]
