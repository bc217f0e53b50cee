from reco_assets.bronze.assets import bronze_movielens

__all__ = ["bronze_movielens"]
