# ---------------------------------------------------------------------------------------------
# Workload identities (least privilege). Each Kubernetes service account in var.k8s_namespace is
# bound to its own Google service account, which gets roles on single resources only:
#
#   KSA                 artifacts bucket                  Secret Manager
#   loopml-server       read  (storage.objectViewer)      loopml database URL
#   loopml-controller   read/write (storage.objectUser)   loopml database URL
#   loopml-mlflow       read/write (storage.objectUser)   mlflow database URL
#
# With the MLflow server proxying artifacts (--serve-artifacts, the README's setup), only the
# MLflow identity touches the bucket; the server and controller grants serve clients that read
# and write gs:// artifact URIs directly (--no-serve-artifacts).
# ---------------------------------------------------------------------------------------------

locals {
  workloads = {
    server = {
      ksa          = var.k8s_service_accounts.server
      bucket_role  = "roles/storage.objectViewer"
      database     = "loopml"
      display_name = "loopml serving replicas: read artifacts"
    }
    controller = {
      ksa          = var.k8s_service_accounts.controller
      bucket_role  = "roles/storage.objectUser"
      database     = "loopml"
      display_name = "loopml controller: read/write artifacts"
    }
    mlflow = {
      ksa          = var.k8s_service_accounts.mlflow
      bucket_role  = "roles/storage.objectUser"
      database     = "mlflow"
      display_name = "MLflow tracking server: read/write artifacts"
    }
  }
}

module "workload_identity" {
  source   = "../modules/gke-workload-identity"
  for_each = local.workloads

  project_id   = var.project_id
  account_id   = "${local.prefix}-${each.key}"
  display_name = each.value.display_name
  namespace    = var.k8s_namespace
  ksa_name     = each.value.ksa

  depends_on = [google_container_cluster.this] # the workload pool exists once the cluster does
}

resource "google_storage_bucket_iam_member" "workloads" {
  for_each = local.workloads

  bucket = google_storage_bucket.artifacts.name
  role   = each.value.bucket_role
  member = module.workload_identity[each.key].member
}

resource "google_secret_manager_secret_iam_member" "workloads" {
  for_each = local.workloads

  secret_id = google_secret_manager_secret.database_url[each.value.database].id
  role      = "roles/secretmanager.secretAccessor"
  member    = module.workload_identity[each.key].member
}

# Only with mutual TLS (var.db_ssl_mode): the Cloud SQL Auth Proxy sidecar needs cloudsql.client,
# a project-level role limited here by an IAM condition to this instance.
resource "google_project_iam_member" "workloads_cloudsql_client" {
  for_each = local.db_via_proxy ? local.workloads : {}

  project = var.project_id
  role    = "roles/cloudsql.client"
  member  = module.workload_identity[each.key].member

  condition {
    title      = "only-${google_sql_database_instance.this.name}"
    expression = "resource.name == 'projects/${var.project_id}/instances/${google_sql_database_instance.this.name}' && resource.service == 'sqladmin.googleapis.com'"
  }
}
