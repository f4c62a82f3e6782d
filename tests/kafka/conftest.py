from streamlib.testing.kafka import kafka_broker  # noqa: F401
