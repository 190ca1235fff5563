"""The project's own Apache Kafka (KRaft): jars from Maven Central, one or three local nodes.

``toolchain`` finds Java and Maven and fetches the broker's jars once; ``cluster`` renders the
node configs from ``deploy/kafka/config``, formats storage, starts, probes and stops the
broker processes.
"""

from c2bus.tools.localkafka.cluster import ClusterStatus, LocalCluster, NodeStatus
from c2bus.tools.localkafka.toolchain import Toolchain, kafka_version

__all__ = ["ClusterStatus", "LocalCluster", "NodeStatus", "Toolchain", "kafka_version"]
