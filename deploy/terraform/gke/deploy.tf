# ---------------------------------------------------------------------------------------------
# Continuous deployment (.github/workflows/deploy.yml), no long-lived key anywhere:
# - Workload Identity Federation trusts GitHub's OIDC tokens of var.github_repository only; the
#   deploy service account can be impersonated only by jobs running in the GitHub environment
#   var.github_deploy_environment;
# - it may get this cluster's credentials (container.clusterViewer: no access to Kubernetes
#   objects by itself) and copy released images into the Artifact Registry repository (by digest,
#   so the digest release.yml printed is the one that runs);
# - inside the cluster it gets Kubernetes `edit` in var.k8s_namespace only, by a RoleBinding an
#   administrator creates once with the Namespace (docs/deploy.md): GKE's IAM roles are
#   cluster-wide, so namespace scope needs RBAC, and Terraform creates nothing in the cluster.
# The control plane is private: deploy.yml runs on a self-hosted runner inside the VPC and uses
# the internal endpoint; the runner's range goes into var.master_authorized_networks.
# ---------------------------------------------------------------------------------------------

resource "google_iam_workload_identity_pool" "github" {
  workload_identity_pool_id = "${local.prefix}-github"
  display_name              = "GitHub Actions (${local.prefix})"
  description               = "OIDC tokens of ${var.github_repository}'s workflows"

  depends_on = [google_project_service.this]
}

resource "google_iam_workload_identity_pool_provider" "github" {
  #checkov:skip=CKV_GCP_125:The condition pins sub to repo:<owner/name>:environment:<env>; checkov cannot see that var.github_repository is owner/name (its validation enforces it).
  workload_identity_pool_id          = google_iam_workload_identity_pool.github.workload_identity_pool_id
  workload_identity_pool_provider_id = "github"
  display_name                       = "GitHub Actions"

  attribute_mapping = {
    "google.subject"         = "assertion.sub"
    "attribute.repository"   = "assertion.repository"
    "attribute.environment"  = "assertion.environment"
    "attribute.workflow_ref" = "assertion.workflow_ref"
  }
  # Only the deploy job's tokens (this repository, this GitHub environment) are exchanged at all.
  attribute_condition = "assertion.sub == 'repo:${var.github_repository}:environment:${var.github_deploy_environment}'"

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

resource "google_service_account" "deploy" {
  account_id   = "${local.prefix}-deploy"
  display_name = "deploy.yml of ${var.github_repository} (${var.github_deploy_environment})"
}

resource "google_service_account_iam_member" "deploy_github" {
  service_account_id = google_service_account.deploy.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principal://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/subject/repo:${var.github_repository}:environment:${var.github_deploy_environment}"
}

resource "google_project_iam_member" "deploy_cluster_viewer" {
  project = var.project_id
  role    = "roles/container.clusterViewer"
  member  = "serviceAccount:${google_service_account.deploy.email}"
}

resource "google_artifact_registry_repository_iam_member" "deploy_push" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.deploy.email}"
}
