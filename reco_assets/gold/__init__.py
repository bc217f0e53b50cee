from reco_assets.gold.assets import gold_assets, gold_checks

__all__ = ["gold_assets", "gold_checks"]
