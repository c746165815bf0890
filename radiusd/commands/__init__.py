"""CLI handlers (the top layer): parse options, open the store the one way
(`radiusd.cli_output.store_from_args`), call the admin/store functions, print. No rules here."""
