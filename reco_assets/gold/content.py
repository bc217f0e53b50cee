"""Content similarity: TF-IDF vectors of movies (genres and tag words) and the cosine between a movie and a user's
history profile, for the ranker's `content` feature."""

import re

import numpy as np
import pandas as pd
from scipy import sparse

from reco_assets.gold.ranking import locate

TAG_WORD = re.compile(r"[a-z0-9]+")
# Tag words count a quarter as much as genres: on the sample, tags cover 16 % of the movies and swamp the
# genres of those they cover when both share one vector.
TAG_WEIGHT = 0.25


def tag_words(tags: list[str]) -> list[str]:
    """The lower-cased words of a movie's tags."""
    return [word for tag in tags for word in TAG_WORD.findall(tag.lower())]


def tfidf(documents: list[list[str]]) -> sparse.csr_matrix:
    """L2-normalised TF-IDF rows of tokenised documents (no columns when there is no token at all)."""
    if not any(documents):
        return sparse.csr_matrix((len(documents), 0), dtype=np.float32)
    # scikit-learn is imported where it is used (here and in ContentIndex): importing it takes about 1.1 s, and every
    # run process loads this module, the live event runs' too.
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    vectorizer = TfidfVectorizer(analyzer=_identity, sublinear_tf=True, dtype=np.float32)
    return normalize(vectorizer.fit_transform(documents))


class ContentIndex:
    """TF-IDF vectors of movies by sorted id: genres and tag words, each block L2-normalised, tags × TAG_WEIGHT."""

    def __init__(self, ids: np.ndarray, vectors: sparse.csr_matrix):
        from sklearn.preprocessing import normalize

        order = np.argsort(ids, kind="stable")
        self.ids = np.asarray(ids, dtype=np.int64)[order]
        self.vectors = normalize(sparse.csr_matrix(vectors, dtype=np.float32)[order])

    @classmethod
    def from_movies(cls, movies: pd.DataFrame, tags: pd.DataFrame) -> "ContentIndex":
        """`movies`: movie_id, genres (list); `tags`: movie_id, tag."""
        tags_by_movie = tags.groupby("movie_id")["tag"].agg(list)
        genres = tfidf([list(g) for g in movies["genres"]])
        tagged = tfidf([tag_words(tags_by_movie.get(movie_id, [])) for movie_id in movies["movie_id"]])
        return cls(movies["movie_id"].to_numpy(), sparse.hstack([genres, TAG_WEIGHT * tagged]).tocsr())

    def positions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions of the ids that are indexed, mask of those ids among `ids`)."""
        return locate(self.ids, ids)

    def similarities(self, histories: list[np.ndarray], weights: list[np.ndarray],
                     candidates: list[np.ndarray]) -> list[np.ndarray]:
        """For each user, the cosine between each of their candidates and their profile (the weighted sum of their
        history movies' vectors). All users at once: one sparse product builds the profiles; each candidate's words
        are then looked up in its owner's profile."""
        from sklearn.preprocessing import normalize

        n = len(histories)
        lengths = [len(h) for h in histories]
        rows, known = self.positions(np.concatenate(histories) if n else np.empty(0, np.int64))
        users = np.repeat(np.arange(n), lengths)[known]
        history_weights = np.concatenate(weights)[known] if n else np.empty(0)
        profiles = normalize(sparse.csr_matrix((history_weights.astype(np.float32), (users, rows)),
                                               shape=(n, len(self.ids))) @ self.vectors)
        counts = [len(c) for c in candidates]
        scores = np.zeros(sum(counts), np.float32)
        candidate_rows, candidate_known = self.positions(np.concatenate(candidates) if n else np.empty(0, np.int64))
        owners = np.repeat(np.arange(n), counts)[candidate_known]
        # Only the candidates' own words are looked up in their owner's profile: a copy of the profile per candidate
        # would hold every word of every history (tens of GB for 20,000 users of ml-25m with its tags).
        profiles.sort_indices()  # the look-ups below search each profile row
        words = self.vectors[candidate_rows].tocoo()
        profile_values = np.asarray(profiles[owners[words.row], words.col]).ravel()
        scores[candidate_known] = np.bincount(words.row, words.data * profile_values, minlength=len(candidate_rows))
        return np.split(scores, np.cumsum(counts)[:-1]) if n else []


def _identity(tokens: list[str]) -> list[str]:
    return tokens

