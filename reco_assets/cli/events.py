"""Producers of events: synthetic ones, and MovieLens ratings replayed."""

import argparse
import time

from reco_assets.cli.common import CliError, positive_float, positive_int


def make_producer(args):
    from reco_assets.events.producer import EventProducer
    from reco_assets.kafka.client import kafka_resource

    return EventProducer(kafka_resource(resolve=True).client_config(), delivery_timeout_s=args.timeout)


def parse_mix(text: str) -> dict[str, float]:
    try:
        mix = {name.strip(): float(weight) for name, weight in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not like view=0.6,click=0.3,rating=0.1") from None
    if set(mix) != {"view", "click", "rating"}:
        raise argparse.ArgumentTypeError(f"the mix needs view, click and rating, got {sorted(mix)}")
    return mix


def cmd_generate_events(args) -> None:
    from reco_assets.bronze.movielens import BUNDLED_SAMPLE
    from reco_assets.events.generator import EventGenerator, load_population
    from reco_assets.events.producer import ProduceError, Progress
    from reco_assets.events.publish import generate_batch, generate_stream

    try:
        generator = EventGenerator(load_population(args.data_dir, BUNDLED_SAMPLE), args.mix, args.invalid_rate,
                                   args.seed)
    except ValueError as error:
        raise CliError(str(error)) from None
    producer = make_producer(args)
    progress = Progress(producer, args.num_events if args.mode == "batch" else None)
    started = time.monotonic()
    try:
        if args.mode == "batch":
            kinds = generate_batch(producer, generator, args.num_events, progress)
        else:
            kinds = generate_stream(producer, generator, args.events_per_second, args.duration, progress)
    except ProduceError as error:
        raise CliError(str(error)) from None
    seconds = time.monotonic() - started
    acked = sum(producer.acked.values())
    print(f"{acked} events acknowledged in {seconds:.1f} s ({acked / seconds:,.0f} ev/s): "
          + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()) if v))


def cmd_replay_movielens(args) -> None:
    from reco_assets.bronze.movielens import BUNDLED_SAMPLE
    from reco_assets.events.generator import ratings_source
    from reco_assets.events.producer import ProduceError, Progress
    from reco_assets.events.publish import replay_movielens

    source = ratings_source(args.data_dir, BUNDLED_SAMPLE)
    producer = make_producer(args)
    started = time.monotonic()
    try:
        sent = replay_movielens(producer, source, args.speedup, args.limit, Progress(producer, args.limit))
    except ProduceError as error:
        raise CliError(str(error)) from None
    print(f"{sent} MovieLens ratings from {source} acknowledged in {time.monotonic() - started:.1f} s")


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not within [0, 1]")
    return value


def register(add) -> None:
    def add_producer(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = add(name, handler, help_text, catalog=False)
        sub.add_argument("--timeout", type=positive_float, default=30.0,
                         help="seconds an event may wait for the broker's acknowledgement (default 30)")
        return sub

    generate = add_producer("generate-events", cmd_generate_events,
                            "produce synthetic view / click / rating events to Kafka ($KAFKA_BOOTSTRAP_SERVERS)")
    generate.add_argument("--mode", choices=["batch", "stream"], default="batch")
    generate.add_argument("--num-events", type=positive_int, default=10_000, help="batch mode (default 10000)")
    generate.add_argument("--events-per-second", type=positive_float, default=100.0, help="stream mode")
    generate.add_argument("--duration", type=positive_float, help="stream mode: seconds (default: until Ctrl+C)")
    generate.add_argument("--mix", type=parse_mix, default=None, help="default view=0.6,click=0.3,rating=0.1")
    generate.add_argument("--invalid-rate", type=fraction, default=0.0,
                          help="share of malformed events, of many kinds (default 0)")
    generate.add_argument("--seed", type=int, default=None)
    replay = add_producer("replay-movielens", cmd_replay_movielens,
                          "publish MovieLens ratings as rating events, in timestamp order")
    replay.add_argument("--speedup", type=positive_float, default=None,
                        help="keep the ratings' time gaps divided by this (default: as fast as possible)")
    replay.add_argument("--limit", type=positive_int, default=None)
