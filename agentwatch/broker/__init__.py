"""A real single-node Apache Kafka 4.x broker (KRaft) that the project starts by itself.

``launcher`` starts, stops and inspects it; ``runtime`` finds the Kafka jars and a Java
17+ to run them; ``config`` writes what the broker starts from; ``tls`` makes what a
SASL_SSL broker needs; ``ports`` picks and probes local ports.
"""
