"""The gateway role: jobs in (files, live streams, AI requests), segments out to orchestrators
chosen by selection, paid with tickets, results checked before they are accepted."""
