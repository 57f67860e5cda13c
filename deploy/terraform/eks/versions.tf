terraform {
  # Cross-variable references in validation blocks need Terraform 1.9.
  required_version = ">= 1.9, < 2.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
    tls = {
      source  = "hashicorp/tls"
      version = "~> 4.0"
    }
  }

  # Remote state: see backend.tf.example and backend.hcl.example next to this file.
}

provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}
