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
  description = "Secret Manager secret IDs holding the postgresql+psycopg:// URL of each database (mlflow, loopml)."
  value       = { for db, s in google_secret_manager_secret.database_url : db => s.secret_id }
}

output "database_urls" {
  description = "postgresql+psycopg:// URL of each database, password included: sensitive, read with terraform output -json."
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

# deploy/k8s/overlays/prod/cluster.env, the one file the prod overlay takes names from:
#   terraform output -raw kustomize_env > ../../k8s/overlays/prod/cluster.env
# Keys and their order are the overlay's contract (cluster.env.example); no secret in it.
locals {
  kustomize_env = <<-EOT
    CLOUD=gke
    IMAGE=${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}/loopml
    HOST=${var.host}
    SERVER_IDENTITY=${module.workload_identity["server"].email}
    CONTROLLER_IDENTITY=${module.workload_identity["controller"].email}
    MLFLOW_IDENTITY=${module.workload_identity["mlflow"].email}
    MLFLOW_ARTIFACTS_DESTINATION=gs://${google_storage_bucket.artifacts.name}/mlflow
  EOT
}

output "kustomize_env" {
  description = "Content of deploy/k8s/overlays/prod/cluster.env (KEY=value lines)."
  value       = local.kustomize_env
}

output "deploy_identity" {
  description = "Google service account deploy.yml impersonates through Workload Identity Federation (bind it to `edit` in the namespace: docs/deploy.md)."
  value       = google_service_account.deploy.email
}

# Set each as a variable of the GitHub environment var.github_deploy_environment (docs/deploy.md).
output "github_environment_variables" {
  description = "Variables deploy.yml reads from its GitHub environment (no secret among them)."
  value = {
    LOOPML_CLOUD                      = "gke"
    LOOPML_DEPLOY_IDENTITY            = google_service_account.deploy.email
    LOOPML_WORKLOAD_IDENTITY_PROVIDER = google_iam_workload_identity_pool_provider.github.name
    LOOPML_GCP_PROJECT                = var.project_id
    LOOPML_CLUSTER_NAME               = google_container_cluster.this.name
    LOOPML_CLUSTER_LOCATION           = google_container_cluster.this.location
    LOOPML_CLUSTER_ENV                = local.kustomize_env
  }
}
