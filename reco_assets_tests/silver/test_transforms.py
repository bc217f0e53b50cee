"""Silver parsing expressions, run on real local Spark."""

import datetime as dt

from reco_assets.silver import transforms


def test_titles_years_and_genres(spark):
    raw = spark.createDataFrame(
        [
            (1, "Toy Story (1995)", "Adventure|Animation|Children"),
            (2, "Dead Snow 2: Red vs. Dead (2014) ", "Action|Horror"),
            (3, "Death Note: Desu nôto (2006–2007)", "(no genres listed)"),
            (4, "Babylon 5", "Sci-Fi"),
            (5, "Nineteen Eighty-Four (1984) (1984)", "Drama"),
            (6, "City of Lost Children, The (Cité des enfants perdus, La) (1995)", None),
        ],
        "movieId INT, title STRING, genres STRING",
    )
    rows = {r.movie_id: r for r in transforms.movies(raw).collect()}
    assert (rows[1].title, rows[1].year, rows[1].genres) == ("Toy Story", 1995, ["Adventure", "Animation", "Children"])
    assert (rows[2].title, rows[2].year) == ("Dead Snow 2: Red vs. Dead", 2014)
    assert (rows[3].title, rows[3].year, rows[3].genres) == ("Death Note: Desu nôto", 2006, [])
    assert (rows[4].title, rows[4].year) == ("Babylon 5", None)
    assert (rows[5].title, rows[5].year) == ("Nineteen Eighty-Four (1984)", 1984)
    assert rows[6].title == "City of Lost Children, The (Cité des enfants perdus, La)"
    assert rows[6].genres == []


def test_ratings_typed_utc_and_latest_per_user_movie(spark):
    raw = spark.createDataFrame(
        [(1, 10, 4.0, 0), (1, 10, 2.5, 60), (2, 10, 5.0, 964982703)],
        "userId INT, movieId INT, rating DOUBLE, timestamp BIGINT",
    )
    rows = sorted(transforms.ratings(raw).collect())
    assert [(r.user_id, r.movie_id, r.rating) for r in rows] == [(1, 10, 2.5), (2, 10, 5.0)]
    assert rows[0].rated_at == dt.datetime(1970, 1, 1, 0, 1)
    assert rows[1].rated_at == dt.datetime(2000, 7, 30, 18, 45, 3)
