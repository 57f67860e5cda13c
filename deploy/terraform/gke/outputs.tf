# What deploy/k8s overlays need. Nothing here is a secret except database_urls (sensitive).

output "cluster_name" {
  description = "GKE cluster name."
  value       = google_container_cluster.this.name
}

output "cluster_location" {
  description = "GKE cluster location (region)."
  value       = google_container_cluster.this.location
}

output "get_credentials_command" {
  description = "Command that writes a kubeconfig entry for the cluster."
  value       = "gcloud container clusters get-credentials ${google_container_cluster.this.name} --region ${var.region} --project ${var.project_id}"
}

output "registry_url" {
  description = "Docker registry prefix: push and reference images as <registry_url>/loopml:<tag>."
  value       = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "image_repository" {
  description = "Image name without tag for the kustomize images: newName (<image_repository>:<tag>)."
  value       = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}/loopml"
}

output "artifacts_bucket" {
  description = "Name of the MLflow artifacts bucket."
  value       = google_storage_bucket.artifacts.name
}

output "mlflow_artifacts_destination" {
  description = "MLflow server --artifacts-destination (or --default-artifact-root)."
  value       = "gs://${google_storage_bucket.artifacts.name}/mlflow"
}

output "db_private_ip" {
  description = "Private IP of the Cloud SQL instance (reachable from the cluster's VPC)."
  value       = google_sql_database_instance.this.private_ip_address
}

output "db_connection_name" {
  description = "Cloud SQL connection name (project:region:instance), for the Cloud SQL Auth Proxy."
  value       = google_sql_database_instance.this.connection_name
}

output "database_url_secrets" {
  description = "Secret Manager secret IDs holding the postgresql:// URL of each database (mlflow, loopml)."
  value       = { for db, s in google_secret_manager_secret.database_url : db => s.secret_id }
}

output "database_urls" {
  description = "postgresql:// URL of each database, password included: sensitive, read with terraform output -json."
  value       = local.database_urls
  sensitive   = true
}

output "k8s_namespace" {
  description = "Kubernetes namespace the workload identities are bound to."
  value       = var.k8s_namespace
}

output "service_account_annotations" {
  description = "Annotations per Kubernetes service account name (iam.gke.io/gcp-service-account)."
  value       = { for k, w in local.workloads : w.ksa => module.workload_identity[k].ksa_annotations }
}

output "workload_service_accounts" {
  description = "Google service account email per workload (server, controller, mlflow)."
  value       = { for k, m in module.workload_identity : k => m.email }
}
