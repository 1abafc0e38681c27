"""Pure value types of the OCI specs and Docker's equivalents. No I/O."""
