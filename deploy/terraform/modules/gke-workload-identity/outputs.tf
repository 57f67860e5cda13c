output "email" {
  description = "Email of the Google service account."
  value       = google_service_account.this.email
}

output "member" {
  description = "IAM member string of the Google service account, for resource-level grants."
  value       = "serviceAccount:${google_service_account.this.email}"
}

output "ksa_annotations" {
  description = "Annotations to put on the Kubernetes service account."
  value       = { "iam.gke.io/gcp-service-account" = google_service_account.this.email }
}
