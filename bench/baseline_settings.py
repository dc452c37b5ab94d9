"""Settings for bench/ingest.py: the product settings plus the benchmark's baseline URLs (never in
the product's URLconf)."""

from iops.settings import *  # noqa: F403

ROOT_URLCONF = "bench.baseline_urls"
