# One Google service account (GSA) per Kubernetes workload, impersonable only by one Kubernetes
# service account (KSA) through GKE Workload Identity. The GSA gets no role here: the caller grants
# it exactly the resource-level roles the workload needs (least privilege).

resource "google_service_account" "this" {
  project      = var.project_id
  account_id   = var.account_id
  display_name = var.display_name
  description  = "Workload Identity for KSA ${var.namespace}/${var.ksa_name}"
}

resource "google_service_account_iam_member" "workload_identity_user" {
  service_account_id = google_service_account.this.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.namespace}/${var.ksa_name}]"
}
