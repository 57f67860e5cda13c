terraform {
  # Cross-variable references in validation blocks need Terraform 1.9.
  required_version = ">= 1.9, < 2.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  # Remote state: see backend.tf.example and backend.hcl.example next to this file.
}

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = local.labels
}
