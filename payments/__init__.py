"""castnet payments layer (see DESIGN.md): Livepeer-compatible probabilistic micropayment tickets.

ticket      Ticket, its packed hash, signature, win rule; SignedTicket and WinningTicket
params      TicketParams and how a recipient derives them (HMAC rand, face value, win_prob)
funds       a sender's reserve share and max float (Livepeer's rule)
validator   stateless checks of a received ticket
nonces      replay protection per recipient_rand_hash, bounded and expiring
recipient   Recipient: quotes params, accepts tickets, queues winners
sender      Sender: sessions and tickets with strictly increasing nonces
balance     session balances: ticket credit against fees
queue       RedemptionQueue: gas-aware, expiry-aware, retried, never twice
interfaces  ChainView, SenderInfo and the SenderFunds / ChainBroker / TicketStore Protocols
fakes       in-memory TicketStore and chain
errors      PaymentError and its subclasses
"""
