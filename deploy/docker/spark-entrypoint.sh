#!/bin/sh
# Entry point of the image's spark target (Dockerfile), under tini.
#   executor       a Spark executor in a Kubernetes pod that Spark's driver started: the command of
#                  Spark's own image entrypoint (kubernetes/dockerfiles/spark/entrypoint.sh), from
#                  the environment the driver sets on the pod
#   anything else  loopml with these arguments (`batch score --engine spark ...`: the driver)
set -eu

if [ "${1:-}" = "executor" ]; then
    spark_home="$(/opt/loopml/bin/python3 -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
    # SPARK_JAVA_OPT_0, _1, ...: the driver's spark.executor.extraJavaOptions, in order.
    set --
    value=""
    for name in $(env | sed -n 's/^\(SPARK_JAVA_OPT_[0-9]*\)=.*/\1/p' | sort -t_ -k4 -n); do
        eval "value=\${$name}"
        set -- "$@" "$value"
    done
    exec java -Xms"${SPARK_EXECUTOR_MEMORY}" -Xmx"${SPARK_EXECUTOR_MEMORY}" "$@" \
        -cp "${spark_home}/jars/*" \
        org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
        --driver-url "${SPARK_DRIVER_URL}" \
        --executor-id "${SPARK_EXECUTOR_ID}" \
        --cores "${SPARK_EXECUTOR_CORES}" \
        --app-id "${SPARK_APPLICATION_ID}" \
        --hostname "${SPARK_EXECUTOR_POD_IP}" \
        --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID}" \
        --podName "${SPARK_EXECUTOR_POD_NAME}"
fi
exec /opt/loopml/bin/loopml "$@"
