"""Document templates of the synthetic private-records corpus, by document kind.

Pure data, no logic: :mod:`fedpriv.data.synthetic` fills the ``{slots}``. Each
template has a scope: ``"shared"`` templates are used by the public corpus and
by the clients, ``"public"`` ones only by the public corpus and ``"private"``
ones only by the clients, so that fine-tuning on client data has phrasings to
learn that the base model never saw.

Slots that hold a personal field (recorded as a ``PiiSpan``): ``name``,
``first``, ``staff``, ``staff_first`` (names); ``dob``, ``date``, ``date2``
(dates); ``phone``; ``email``; ``account``; ``pid``, ``emp_id``, ``ticket``,
``claim_ref`` (ids); ``address``.
"""

from __future__ import annotations

from typing import Final

#: ``kind -> ((scope, template), ...)``; the order of kinds is the public order.
TEMPLATES: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "clinical_note": (
        (
            "shared",
            "Clinical note, {org}. Patient {name}, DOB {dob}, ID {pid}, was seen on {date} by "
            "Dr. {staff} for {issue}. On examination: {detail}. Plan: {action}. Review in "
            "{weeks} weeks. Contact number on file: {phone}.",
        ),
        (
            "shared",
            "{date}: {name} (patient ID {pid}) attended {org} reporting {issue}. Dr. {staff} "
            "noted the following. {detail}. We agreed to {action}. The patient lives at "
            "{address} and can be reached on {phone}.",
        ),
        (
            "private",
            "Follow-up visit for {name}, born {dob}. Presenting complaint: {issue}. Findings: "
            "{detail}. The plan was discussed and the patient agreed to {action}. Next "
            "appointment on {date2}. Seen by Dr. {staff} at {org}, record {pid}.",
        ),
        (
            "private",
            "Telephone consultation on {date} with {name} ({pid}), who called from {phone} about "
            "{issue}. {detail}. Dr. {staff} advised the patient to {action}. A copy of this note "
            "was sent to {email}.",
        ),
        (
            "public",
            "Progress note. {name} ({pid}) returned to {org} on {date}. Since the last visit the "
            "patient describes {issue}. Today's findings: {detail}. Dr. {staff} recommends that "
            "we {action}. Results will be sent to {email}.",
        ),
        (
            "public",
            "Discharge summary from {org}. Name: {name}. Date of birth: {dob}. Admitted on "
            "{date} with {issue}. {detail}. On discharge we will {action}. A letter went to the "
            "family doctor. Home address: {address}.",
        ),
    ),
    "appointment_reminder": (
        (
            "shared",
            "Dear {first}, this is a reminder of your {service} at {org} on {date} at {time}. "
            "Please arrive ten minutes early and bring your reference number {pid}. To "
            "rearrange, call us at least one day before. This reminder was sent to {email}.",
        ),
        (
            "shared",
            "Appointment reminder for {name}: {service} with {staff} on {date} at {time}, at our "
            "{city} office. If you cannot attend, please let {org} know 24 hours in advance. "
            "Reference {pid}. Text sent to {phone}.",
        ),
        (
            "private",
            "Hello {first}, your {service} at {org} is booked for {date}, {time}. Your booking "
            "reference is {pid}. Reply YES to confirm or call us to change the time. We have "
            "your address as {address}; please tell us if it has changed.",
        ),
        (
            "private",
            "{org}: {name}, you are due for your {service} on {date} at {time} with {staff}. "
            "Reply C to cancel. Missed appointments may be charged. Questions? Email us from "
            "{email} quoting {pid}.",
        ),
        (
            "public",
            "Reminder from {org}. {name} is scheduled for a {service} on {date} at {time} with "
            "{staff}. Please bring photo identification and your reference number {pid}. We "
            "will send any changes to {email} or call {phone}.",
        ),
        (
            "public",
            "Your {service} is coming up. Name: {name}, born {dob}. Time: {time} on {date}. "
            "Place: {org}, {city}. If you cannot come, call us so we can offer the slot to "
            "someone else. Ref {pid}.",
        ),
    ),
    "support_ticket": (
        (
            "shared",
            "Ticket {ticket} opened {date}. Customer: {name}, account {account}, phone {phone}. "
            "Issue: {issue}. Notes: {detail}. Next step: {action}. Status: {status}. Handled by "
            "{staff}.",
        ),
        (
            "shared",
            "Support request {ticket} from {name} ({email}), received {date}. The customer "
            "reports {issue}. {detail}. Agent {staff} will {action} and call back on {phone} "
            "within {days} days.",
        ),
        (
            "private",
            "Case {ticket} | {date} | {name} | account {account}. Customer called about {issue}. "
            "{detail}. Agreed to {action}. Callback number {phone}. Priority: {priority}. "
            "Assigned to {staff}.",
        ),
        (
            "private",
            "Complaint logged by {staff} on {date}. {name}, who lives at {address}, is unhappy "
            "about {issue}. {detail}. We offered to {action}. Reference {ticket}; customer "
            "e-mail {email}. Status: {status}.",
        ),
        (
            "public",
            "New ticket {ticket}: {name} wrote in on {date} about {issue}. Address on the "
            "account: {address}. {detail}. Proposed fix: {action}. The ticket stays open until "
            "the customer confirms by e-mail at {email}.",
        ),
        (
            "public",
            "Chat transcript summary {ticket}. {name} (account {account}) contacted {org} on "
            "{date} regarding {issue}. {detail}. The agent promised to {action}. A satisfaction "
            "survey was sent to {phone}. Priority {priority}.",
        ),
    ),
    "email": (
        (
            "shared",
            "Subject: Question about my {product}\nHi {staff_first},\nI am writing about "
            "{issue}. Could you please {request}? My account number is {account} and you can "
            "call me on {phone}.\nThanks,\n{name}",
        ),
        (
            "shared",
            "From: {email}\nTo: {org}\nDate: {date}\nDear {org} team, my name is {name} and I "
            "live at {address}. I am contacting you regarding {issue}. Please {request}.\nKind "
            "regards,\n{first}",
        ),
        (
            "private",
            "Hello {first},\nThank you for contacting {org} about {issue}. {staff} has reviewed "
            "your file ({pid}) and we will {action} by {date}. If anything changes we will call "
            "you on {phone}.\nBest wishes,\n{staff}",
        ),
        (
            "private",
            "Hi team,\nquick note from {name} again. Since {date} I have had {issue}. {detail}. "
            "I would like you to {request}. The best number to reach me is {phone}, or write to "
            "{email}.\nCheers,\n{first}",
        ),
        (
            "public",
            "Subject: {product}\n{name} <{email}> wrote on {date}: I noticed {issue} and would "
            "like someone to {request}. My reference is {pid}. Thank you for your help, and "
            "please reply to this address rather than calling.",
        ),
        (
            "public",
            "Dear {name},\nwe are sorry to hear about {issue}. Our {role} {staff} will {action}. "
            "Please keep this e-mail; your reference is {pid}. You can reply here or call {org} "
            "if you have questions.\nYours sincerely,\nCustomer Relations",
        ),
    ),
    "bank_statement": (
        (
            "shared",
            "{org} statement for {name}, {address}. Account {account}, period ending {date}. "
            "Opening balance {amount}. Payment to {merchant} {amount2}. Direct debit to "
            "{merchant2} {amount3}. Closing balance {amount4}. {bank_note}.",
        ),
        (
            "shared",
            "Dear {first}, on {date} a payment of {amount} to {merchant} was taken from your "
            "{product} {account}. If you did not authorise this payment, contact {org} "
            "immediately. We have your phone number as {phone} and your e-mail as {email}.",
        ),
        (
            "private",
            "Monthly summary {date}. Customer {name}, customer ID {pid}. Product: {product}, "
            "number {account}. Money in: {amount}. Money out: {amount2}, including {merchant}. "
            "Available balance: {amount3}. {bank_note}. Registered address: {address}.",
        ),
        (
            "private",
            "Statement {date} | {name} | {product} {account} | {merchant} -{amount} | "
            "{merchant2} -{amount2} | salary +{amount3} | balance {amount4}. {bank_note}. "
            "Queries: call {org} quoting customer ID {pid}.",
        ),
        (
            "public",
            "{org} security alert for {name}: a new device signed in to online banking for "
            "account {account} on {date}. If this was not you, reply to {email} and we will "
            "freeze your {product} until we can confirm your identity by phone.",
        ),
        (
            "public",
            "Annual summary for {name}, born {dob}. Account type: {product}, number {account}. "
            "Interest earned: "
            "{amount}. Fees charged: {amount2}. Largest payment: {merchant}, {amount3}. Please "
            "check that your address, {address}, is still correct.",
        ),
    ),
    "hr_note": (
        (
            "shared",
            "HR note, {org}. Employee {name}, ID {emp_id}, {role} in {dept}. On {date} the "
            "employee {hr_event}. Manager {staff} {hr_followup}. Home address {address}; phone "
            "{phone}.",
        ),
        (
            "shared",
            "Personnel record update {date}: {name} ({emp_id}) {hr_event}. {hr_detail}. "
            "Emergency contact number {phone}. Reviewed by {staff}, manager of {dept}.",
        ),
        (
            "private",
            "Meeting note. {staff} met {name}, {role}, on {date} to discuss {hr_topic}. Agreed "
            "actions: {hr_action}. Next check-in on {date2}. Copy sent to {email}. Employee "
            "number {emp_id}.",
        ),
        (
            "private",
            "Absence and welfare record for {name} ({emp_id}, born {dob}). On {date} {first} "
            "{hr_event}. {hr_detail}. Line manager {staff} {hr_followup}. Personal e-mail on "
            "file: {email}.",
        ),
        (
            "public",
            "{name} (staff number {emp_id}) joined the {dept} team at {org} as {role} on {date}. "
            "Salary will be paid into account {account}. Right to work and reference checks "
            "were completed by {staff}. {hr_detail}.",
        ),
        (
            "public",
            "Exit interview with {name}, {role}, held on {date}. The employee {hr_event}. "
            "Reasons discussed: {hr_topic}. Final pay goes to account {account}; tax forms "
            "posted to {address}. Interviewer: {staff}.",
        ),
    ),
    "insurance_claim": (
        (
            "shared",
            "Claim {claim_ref} submitted {date} by {name}, policy {account}, date of birth "
            "{dob}. Description: {claim_event}. Estimated amount {amount}. Handler {staff} will "
            "contact the policyholder on {phone}. Status: {claim_status}.",
        ),
        (
            "shared",
            "Dear {first}, we received your claim {claim_ref} for {claim_event} on {date}. Your "
            "policy number is {account}. Please send receipts or photos as soon as you can; our "
            "confirmation was sent to {email}. We aim to decide within {days} working days.",
        ),
        (
            "private",
            "Claim review. Policyholder {name} of {address}, member ID {pid}. Incident date "
            "{date}: {claim_event}. Amount claimed {amount}. {claim_note}. Decision by {staff}: "
            "{claim_status}.",
        ),
        (
            "private",
            "First notification of loss, taken by {staff} on {date}. Caller {name} ({phone}) "
            "reported {claim_event}. {claim_note}. Policy {account}. Claim reference "
            "{claim_ref}; status {claim_status}.",
        ),
        (
            "public",
            "Notice of claim {claim_ref}. Insured: {name}, {address}. Loss reported on {date}: "
            "{claim_event}. Policy {account}. {claim_note}. Please call us back from {phone} if "
            "any of these details are wrong.",
        ),
        (
            "public",
            "Claim payment advice. {name}, your claim {claim_ref} for {claim_event} is "
            "{claim_status}. Amount: {amount}. Any payment will reach account {account} within "
            "{days} days. Questions: {org} claims team.",
        ),
    ),
}
