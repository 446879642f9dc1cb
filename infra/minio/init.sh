#!/bin/sh
# One-shot setup of the compose stack's MinIO (service minio-init, image minio/mc): the two
# buckets, and an application user that can reach only them. The root credentials stay with
# this job and the minio service; MLflow, the worker and the api use the application user.
# Safe to run again: every step tolerates what an earlier run already did.
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${S3_ACCESS_KEY_ID:?}" "${S3_SECRET_ACCESS_KEY:?}"

mc alias set stack http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing stack/landing stack/mlflow-artifacts
mc admin policy create stack mlops-buckets /etc/minio-init/mlops-buckets-policy.json
mc admin user add stack "$S3_ACCESS_KEY_ID" "$S3_SECRET_ACCESS_KEY"
# Attaching twice is an error: only when `user info` does not list the policy yet (a shell
# pattern, not grep: the mc image has little besides a shell).
case "$(mc admin user info stack "$S3_ACCESS_KEY_ID")" in
    *mlops-buckets*) ;;
    *) mc admin policy attach stack mlops-buckets --user "$S3_ACCESS_KEY_ID" ;;
esac
echo "buckets landing and mlflow-artifacts ready for $S3_ACCESS_KEY_ID"
