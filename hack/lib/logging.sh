#!/usr/bin/env bash
# Logging helpers in the spirit of upstream's kube::log.

rbdf::log::info() {
  echo "+++ $*" >&2
}

rbdf::log::error() {
  echo "!!! $*" >&2
}

# rbdf::log::fatal prints the message and exits non-zero.
rbdf::log::fatal() {
  rbdf::log::error "$@"
  exit 1
}
