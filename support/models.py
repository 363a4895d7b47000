# Tickets, messages and SLA arrive with the support issue; the app exists so the
# import direction backoffice -> support -> orders is fixed from the start.
