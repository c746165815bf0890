"""`radiusd web`: the admin web application and its JSON API."""
