"""Where a run's images come from and the tf.data pipeline that batches them."""
