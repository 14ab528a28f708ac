"""The on-disk feature cache: an extra behind the core's seam `FeatureStore` (`aimonk.model.features`). The command
line hands its stores to the core (`train(config, stores=config_stores(config))`); the core never imports it.

- store.py    FeatureCache: a folder per frozen backbone, preprocessing and precision; entries in shards, each image's
              digest found by a stat where the file is as it was
- folders.py  `aimonk cache`: the cache's folders, what each holds, clearing only what it made
"""

from aimonk.cache.store import FeatureCache, config_stores, default_cache_dir, disk_stores, model_stores

__all__ = ["FeatureCache", "config_stores", "default_cache_dir", "disk_stores", "model_stores"]
