"""When a live run of the open hour may append to what bronze holds (pure logic; the real path is in
test_events_pipeline.py)."""

from reco_assets.bronze.events import appendable
from reco_assets.kafka.client import OffsetRange

VIEWS, CLICKS = ("events_views", 0), ("events_clicks", 0)


def test_only_the_offsets_past_what_bronze_holds_are_appended():
    now = [OffsetRange(*VIEWS, 10, 25), OffsetRange(*CLICKS, 0, 4)]
    # Bronze holds views [10, 20) and no clicks yet: views 20-25 and every click are new.
    assert appendable({VIEWS: (10, 20)}, now, held_records=10) == [OffsetRange(*VIEWS, 20, 25),
                                                                    OffsetRange(*CLICKS, 0, 4)]
    # Nothing new: empty ranges, nothing to read.
    assert [r.count for r in appendable({VIEWS: (10, 25), CLICKS: (0, 4)}, now, held_records=19)] == [0, 0]
    # A new hour: its first live run appends all of it.
    assert appendable({}, now, held_records=0) == now


def test_the_hour_is_replaced_whole_when_appending_could_not_give_its_records():
    now = [OffsetRange(*VIEWS, 10, 25)]
    assert appendable({}, now, held_records=3) is None  # records of no range
    # Records without their ranges (a run killed between its two commits): more records than the ranges say.
    assert appendable({VIEWS: (10, 20)}, now, held_records=15) is None
    assert appendable({VIEWS: (12, 20)}, now, held_records=8) is None  # the hour's range starts elsewhere now
    assert appendable({VIEWS: (10, 30)}, now, held_records=20) is None  # bronze holds more than the log offers
    assert appendable({VIEWS: (10, 20), CLICKS: (0, 3)}, now, held_records=13) is None  # a partition went away
