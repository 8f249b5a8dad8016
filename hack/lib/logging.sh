#!/usr/bin/env bash
# Logging helpers in the spirit of upstream's kube::log.

rbdf::log::info() {
  echo "+++ $*" >&2
}

# rbdf::log::warning is for what goes on but deserves a look (a patch applied
# with reduced context, a tree used with local work in it).
rbdf::log::warning() {
  echo "WARNING: $*" >&2
}

rbdf::log::error() {
  echo "!!! $*" >&2
}

# rbdf::log::fatal prints the message and exits non-zero.
rbdf::log::fatal() {
  rbdf::log::error "$@"
  exit 1
}
